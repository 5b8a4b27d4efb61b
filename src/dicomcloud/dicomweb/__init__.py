"""DICOMweb (PS3.18) over ASGI: routes translate HTTP to service calls and back."""
