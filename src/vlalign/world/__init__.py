"""The synthetic world: scenes, glyphs, text, export and the base models it pretrains."""
