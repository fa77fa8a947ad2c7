"""The local mnistream system as processes."""
