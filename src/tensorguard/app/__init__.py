"""The application layer: what each command does around the library's computations.

Runs batches of models (a bad model fails alone), writes outputs atomically (never replacing a
user's file without ``force``), draws figures through ``tensorguard.plots`` and renders the text
reports. The CLI is a thin caller of these functions; the library's compute modules never import
from here.
"""
