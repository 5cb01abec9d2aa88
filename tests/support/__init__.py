"""What the tests share that is not a fixture: real servers to start (SeaweedFS, the Kubernetes
API emulator), fake copies of the datasets in their loaders' layouts, and records built as the
contract (kbench.records) types them. The fixtures in tests/conftest.py use them; a test module
never imports another test module."""
