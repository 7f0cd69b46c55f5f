"""Files on disk: how this project writes, names and fingerprints them.

- `atomic`: the one writer (a temporary name beside the file, then a rename), and the one
  message a failed write ends in (`WriteError`: the file, the reason, the fix).
- `tensorfile`: canonical safetensors files, the same tensors and metadata always the same bytes.
- `hashing`: every digest the package takes (bytes, files, tensors, params, its own code).
- `paths`: every file the pipeline reads or writes, named once; dvc.yaml declares the same.

Nothing here knows about models, data sets or training: every other package writes through it.
"""
