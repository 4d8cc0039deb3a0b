"""The engine's version, recorded with every result."""

#: Changes whenever the same input and options can give different output pixels.
ENGINE_VERSION = "1.0.0"
