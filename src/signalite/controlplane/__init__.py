"""The rules of the kinesisvideo control plane: one function per AWS operation."""
