//! Model families, one per file, and the registry by `model_type`.
