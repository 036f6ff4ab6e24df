"""``decode.tree_shape=auto``: choose the beam-tree shape with the most expected tokens/s.

- ``costs``: time verification against node count and a draft level against its width on
  this device, at the prompt's length;
- ``probe``: decode a short calibration with a wide tree, recording every round;
- ``acceptance``: replay each round for every narrower shape (what it would have accepted);
- ``search``: the shapes considered and their ranking; ``tune``: all of it, once;
- ``policy``: fixed or auto shape for :class:`longspec.decoding.glide.TreeDecoding`.
"""
