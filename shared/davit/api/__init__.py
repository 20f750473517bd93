"""The Davit API (``davit.dev/v1alpha1``): typed models, and the CRDs generated from them."""
