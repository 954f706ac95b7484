"""The doors: lock and siren states from decisions, inputs and modes, driven through gpiozero."""
