"""Plain nn.Modules: super-resolution generators/discriminators and centre-patch classifiers."""
