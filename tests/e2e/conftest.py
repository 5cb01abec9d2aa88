"""The end-to-end tier: real processes and servers (SeaweedFS, torchrun agents, the Kubernetes
API emulator over HTTP, the packaging build, headless Chromium, the static checks run on a
planted copy). `make test` runs it after the fast tier."""
