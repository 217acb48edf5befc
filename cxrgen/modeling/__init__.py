"""The two model families; `register()` makes the Auto classes and pipelines know them."""


def register():
    """Register configs, models, image processors and processors of every model family with the Auto classes."""
    from .cmcrl import register as register_cmcrl
    from .trrg import register as register_trrg

    register_cmcrl()
    register_trrg()
