"""EmoTorch's web service: the REST API and the consent-first camera page (``emotorch serve``)."""

from emotorch.serve.app import Settings, create_app

__all__ = ["Settings", "create_app"]
