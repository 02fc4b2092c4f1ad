"""backdoor_utils: the helper package of backdoor-book (backdoor attacks, detection and defenses on MNIST)."""

__version__ = "0.1.0"
