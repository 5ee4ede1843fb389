"""The paper's science: segments and serializations, attention masks, the models, augmentations,
and one file per pre-training method. Imports only harness.core."""
