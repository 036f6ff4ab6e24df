"""Model code: target forward, GLIDE draft layer, tiny random test models."""
