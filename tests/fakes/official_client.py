"""Reads secrets from a fake server with a service's official Python SDK; prints them as JSON.

Runs in the test-only venv that tests/secrets/setup.sh makes (infisicalsdk, bitwarden-sdk),
never in composeflux's own interpreter. Arguments come as one JSON object on the command line:

    infisical  {"url", "client_id", "client_secret", "project_id", "environment", "paths", "deploy_key"}
    bitwarden  {"api_url", "identity_url", "access_token", "organization_id", "project_id", "deploy_key_id"}

Output: {"secrets": {name: value}, "deploy_key": value}
        infisical also: "recursive": [[secretPath, name, value], ...] of a recursive listing of "/"
"""

import json
import sys


def infisical(args: dict) -> dict:
    from infisical_sdk import InfisicalSDKClient

    client = InfisicalSDKClient(host=args["url"], cache_ttl=None)
    client.auth.universal_auth.login(client_id=args["client_id"], client_secret=args["client_secret"])
    secrets = {}
    for path in args["paths"]:
        listing = client.secrets.list_secrets(
            project_id=args["project_id"],
            environment_slug=args["environment"],
            secret_path=path,
            expand_secret_references=True,
            include_imports=False,
        )
        secrets.update({s.secretKey: s.secretValue for s in listing.secrets})
    listing = client.secrets.list_secrets(
        project_id=args["project_id"], environment_slug=args["environment"], secret_path="/",
        expand_secret_references=True, include_imports=False, recursive=True,
    )
    recursive = [[s.secretPath, s.secretKey, s.secretValue] for s in listing.secrets]
    folder, _, name = args["deploy_key"].rpartition("/")
    deploy_key = client.secrets.get_secret_by_name(
        secret_name=name, project_id=args["project_id"], environment_slug=args["environment"], secret_path=folder or "/"
    ).secretValue
    return {"secrets": secrets, "deploy_key": deploy_key, "recursive": recursive}


def bitwarden(args: dict) -> dict:
    from bitwarden_sdk import BitwardenClient, DeviceType, client_settings_from_dict

    client = BitwardenClient(
        client_settings_from_dict(
            {"apiUrl": args["api_url"], "identityUrl": args["identity_url"], "deviceType": DeviceType.SDK, "userAgent": "Python"}
        )
    )
    client.auth().login_access_token(args["access_token"])
    identifiers = client.secrets().list(args["organization_id"]).data.data
    full = client.secrets().get_by_ids([i.id for i in identifiers]).data.data
    secrets = {s.key: s.value for s in full if str(s.project_id) == args["project_id"]}
    deploy_key = client.secrets().get(args["deploy_key_id"]).data.value
    return {"secrets": secrets, "deploy_key": deploy_key}


if __name__ == "__main__":
    kind, raw = sys.argv[1], sys.argv[2]
    print(json.dumps({"infisical": infisical, "bitwarden": bitwarden}[kind](json.loads(raw))))
