"""avemo's stages as plain functions on arrays and paths, one module per stage, no Prefect inside."""
