"""Translator tests live in a folder per frontend (``gatewayapi/``, ``istio/``) and share
``golden_support.py`` from here: pytest puts the folder of a conftest outside a package on
``sys.path``, so this file makes ``from golden_support import ...`` work below it."""
