"""Training objectives: a Task wraps a model (and frozen teachers / projection heads) and owns its losses."""
