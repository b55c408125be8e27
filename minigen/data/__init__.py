"""Data for the course, in one convention: images (N, C, H, W) float in [-1, 1], videos (N, T, C, H, W),
labels, attributes and captions alongside in a small dataclass. Nothing downloads at run time.

- MNIST: the full 50k/10k/10k digits shipped as data/mnist.npz (`load_mnist`)
- procedural sets, deterministic functions of a seed: toy 2-D densities, captioned shapes, scenes of one to
  three captioned shapes (full and short captions), cartoon faces with binary attributes, moving-shape videos
  with per-frame actions
"""
from .faces import Faces, make_faces
from .mnist import DataFileError, LabeledImages, load_mnist
from .scenes import (SCENE_VOCAB, Scenes, caption_cells, detokenize_scenes, make_scenes, one_word_changed,
                     parse_caption, scene_cells, score_captions, tokenize_scenes)
from .shapes import CaptionedShapes, caption_for, make_shapes, tokenize
from .toy2d import TOY2D, sample_toy2d, toy2d_log_prob
from .video import ACTIONS, MovingShapes, apply_action, make_moving_shapes, render_frames

__all__ = ["DataFileError", "LabeledImages", "load_mnist", "TOY2D", "sample_toy2d", "toy2d_log_prob",
           "CaptionedShapes", "make_shapes", "caption_for", "tokenize", "Faces", "make_faces",
           "ACTIONS", "MovingShapes", "make_moving_shapes", "apply_action", "render_frames",
           "Scenes", "make_scenes", "tokenize_scenes", "detokenize_scenes", "SCENE_VOCAB", "parse_caption",
           "score_captions", "scene_cells", "caption_cells", "one_word_changed"]
