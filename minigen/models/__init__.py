"""One file per model family; each reads top to bottom like a lecture. Import the family you need:
`from minigen.models.vae import VAE, VAE_PRESETS`."""
