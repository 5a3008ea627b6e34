"""Pieces shared by heads and regressors."""
