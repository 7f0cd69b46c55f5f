"""Your own architectures: put a module here and name its factory in params.yaml as
`model: user_models.<module>:<factory>` (or `part-cli evaluate ... --arch` with the same path).

The factory is called as `factory(num_classes=..., in_channels=...)` and returns a torch module
that takes images in [0, 1]; its `cam_layer` attribute (or the `cam_layer` param) names the
submodule whose output CAM reads. dvc.yaml declares this folder as a dependency of every stage
that builds or loads a model, so editing a file here reruns them.
"""
