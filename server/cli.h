// Operator subcommands of tresor-router (besides running the gateway).
#pragma once

namespace tresor::server {

// tresor-router gen-signing-key [FILE]
int cli_gen_signing_key(int argc, char** argv);
// tresor-router gen-log-key [FILE]: the transparency log's Ed25519 key (log.key_file)
int cli_gen_log_key(int argc, char** argv);
// tresor-router verify-receipt --jwks FILE_OR_URL [--log-key VKEY] [-|FILE] [--request FILE] [--response FILE]
int cli_verify_receipt(int argc, char** argv);

}  // namespace tresor::server
