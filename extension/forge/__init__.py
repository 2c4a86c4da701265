"""TI Trainer on Forge (lllyasviel/stable-diffusion-webui-forge): its own model engine, not the web UI's.

The modules here split as the rest of the package does: :mod:`.tensors`, :mod:`.families` and
:mod:`.conditioning` are host-free (plain torch, tested without Forge); :mod:`.backend` and
:mod:`.adapter` touch Forge's ``backend.*`` / ``modules.*`` and are only importable inside it.
"""
