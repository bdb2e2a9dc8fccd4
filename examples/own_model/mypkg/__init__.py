"""A researcher's own model and data, living outside saliency-bench (``model.name=mypkg.net:factory``,
``data.name=mypkg.data:digits``)."""
