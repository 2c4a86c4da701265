"""The host-agnostic training engine: dataset, latent cache, training loop, schedules and outputs."""
