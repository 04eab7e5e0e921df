"""Real models and datasets: model adapters (timm, open_clip, Hugging Face), dataset adapters (ImageFolder,
CSV/parquet manifests) and the ``image-classification`` task that joins them.

Every path a spec names is confined to the configured data roots (``AUTOFT_DATA_ROOTS``); nothing is ever
downloaded. The model families are optional extras (``pip install autoft-service[timm|clip|hf|parquet]``).
"""
