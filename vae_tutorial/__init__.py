"""Companion package of the VAE book: one small module per idea, imported by every chapter."""

__version__ = "0.1.0"  # a release is tagged v<version>; the chapters' Colab cell installs it
