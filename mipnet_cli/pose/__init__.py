"""The top-down engine and what happens to its poses: boxes -> crops -> every λ -> decode ->
merge (`engine`, `merge`), the learned pose score of the pfs family (`psm`) and tracking
across frames (`tracking`)."""
