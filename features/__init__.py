"""The bundled reference set (package data): see README.md in this folder."""
