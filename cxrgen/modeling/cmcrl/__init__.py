def register():
    """Scaffold until the model family lands (replaced by the model's own registration)."""
