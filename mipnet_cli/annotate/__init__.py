"""The annotation services the CLI calls: image files -> boxes -> poses (`images.Annotator`)
and videos, pipelined (`video.annotate_video`)."""
