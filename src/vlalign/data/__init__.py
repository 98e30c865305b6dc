"""Preference data: building chosen/rejected pairs and corrupting images for them."""
