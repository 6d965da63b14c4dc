"""Job history over time for the Operations charts and failure groups (issue 16 §11, §13)."""
