"""Template files of ``fedge new``: a small project with its own model, data loader and experiment."""
