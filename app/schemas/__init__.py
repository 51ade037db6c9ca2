"""marshmallow schemas: the API's contract, and the source of its OpenAPI document."""
