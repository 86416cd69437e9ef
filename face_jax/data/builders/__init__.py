"""Shipped offline tfds builders: digits, image_folder, arrays, text_csv, wordnet_glosses."""
