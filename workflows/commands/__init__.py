"""What the inspection commands do (``xai status``, ``verify``, ``clean``, ``explain``)."""
