"""The multi-node recipe: ``python -m deploy.multinode`` (docs/multinode.md)."""
