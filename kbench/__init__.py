"""kbench: fine-tune CLIP ViT-B/32 and ResNet50 on the same images and compare them.

The `kbench` package itself is the torch-free core shared by the client and the training job
(grids and configs, storage, records and what they mean, runs, backends, the report).
`kbench.cli` is the command line, `kbench.jobs` what runs inside a training process,
`kbench.k8s` the Kubernetes side. The README's Layout section lists every module.
"""

__version__ = "0.1.0"
