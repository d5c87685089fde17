"""Where the store's names lived before the store package was split by concern.

The schema is in :mod:`pipeline.store.schema`, finding arrays in :mod:`pipeline.store.arrays`,
making and opening a store in :mod:`pipeline.store.access`, the explainer and class axes in
:mod:`pipeline.store.axes`, and a task's handle in :mod:`pipeline.store.view`.
"""

# re-exported until importers move
from pipeline.store.access import (  # noqa: F401
    checksum,
    create_store,
    explainer_index,
    explainers,
    open_dataset,
    open_store,
    region,
    regions_checksum,
    schema_problem,
    shard_size,
)
from pipeline.store.arrays import array, array_names, dims  # noqa: F401
from pipeline.store.axes import (  # noqa: F401
    copy_slot,
    resize_explainers,
    split_arrays,
    write_classes,
)
from pipeline.store.schema import (  # noqa: F401
    CLASS_NAME,
    EXPLAINER,
    FIXED_SIZES,
    NAN,
    POOL_BYTES,
    POOL_EXPLAINERS,
    POOL_SHARDS,
    POOLED_DIMS,
    SCHEMA,
    SCHEMA_VERSION,
    STRING_BYTES,
    ArrayFamily,
    Schema,
    attribution_codecs,
    attributions_dtype,
    chunk_shape,
    shard_shape,
    stored_choice,
)
from pipeline.store.view import StoreView  # noqa: F401
