"""Configuration: the table of settings (declared once), the loaders that turn flags, files and
environment variables into one frozen `Config`, and the settings reference generated from it."""
