"""Looking inside a model: TPO token scores on preference records, as data, a page and pictures."""
