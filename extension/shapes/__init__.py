"""A small visual world with a right answer: coloured shapes on plain backgrounds.

:mod:`.draw` draws seeded pictures with captions (some colour-shape combinations are held out of
the tiny-shapes model's training), :mod:`.judge` says which colour and shape a picture shows,
:mod:`.model` builds and loads the shipped tiny-shapes model, :mod:`.base_training` trains it.
"""
