"""deocc-live's trainer: synthesises pairs, fits, evaluates and exports the generator."""
