"""Cross-cutting pieces every other folder may use, and which use nothing of the package but each
other: errors (`MipnetError`), signal handling, atomic file writing and strict JSON (`files`),
keypoint sets as data (`keypoints`), the result types `Box`, `Pose`, `ImagePoses` (`results`),
crop geometry (`geometry`), OKS and its suppressions (`oks`) and hardware facts (`hardware`)."""
