"""HTTP layer: thin blueprints; envelope.py is the only place the envelope is built."""
