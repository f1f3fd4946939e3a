"""The runner process: the only package that imports torch and diffusers."""
