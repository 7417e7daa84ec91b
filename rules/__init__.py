"""The built-in method definitions (TOML), installed as package data of nnxplain."""
