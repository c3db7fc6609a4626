"""E-mail: templates rendered with ``string.Template``, sent through SMTP (aiosmtplib) or written to the log."""
