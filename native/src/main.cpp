// nanoforge-run: a nano exported to GGUF, answering JSONL on stdin with JSONL on stdout.
//
//   nanoforge-run runs/en-ja/gguf < inputs.jsonl > answers.jsonl
//   echo '{"input": "Where is the station?", "max_new_tokens": 16}' | nanoforge-run runs/en-ja/gguf
//   nanoforge-run quantize model.f32.gguf model.q4_k_m.gguf q4_k_m
//   nanoforge-run info runs/en-ja/gguf          # the manifest it carries
//   nanoforge-run tokenize runs/en-ja/gguf      # text lines -> token ids (llama.cpp's tokenizer)
//   nanoforge-run offsets runs/receipts/gguf    # text lines -> [ids, character spans] (a span tagger's)
//   nanoforge-run normalise                     # {"type": "date", "text": "25 Dec 2018"} -> "2018-12-25"
//   nanoforge-run constrain runs/inv/gguf       # a JSON prefix -> the tokens allowed next, its completion
//
// Each input line is a JSON string or an object with `input` (and optional max_new_tokens,
// temperature, top_p, seed, stop, timing); each output line is the Python runtime's answer,
// or {"error": "stdin line N: ..."} for a bad line, which stops nothing.
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>

#include "nano.h"

using nanoforge::json;

static int usage() {
    std::cerr << "usage: nanoforge-run MODEL [--threads N] [--no-verify] [--kv-cache f32|f16]   (JSONL in -> answers out)\n"
                 "       nanoforge-run info MODEL\n"
                 "       nanoforge-run tokenize MODEL             (a line of text -> its token ids)\n"
                 "       nanoforge-run offsets MODEL              (a line of text -> [ids, spans], span taggers)\n"
                 "       nanoforge-run constrain MODEL            (a JSON prefix -> allowed tokens, completion; schema decoders)\n"
                 "       nanoforge-run normalise                  ({\"type\": T, \"enum\": [..], \"text\": S} -> the typed value)\n"
                 "       nanoforge-run quantize IN.gguf OUT.gguf TYPE [--threads N]\n"
                 "MODEL: a GGUF bundle folder (nanoforge export BUNDLE --format gguf) or its .gguf file\n"
                 "--kv-cache f16: ~2x faster decoding on CPU (with llama.cpp's flash attention); logits ~5e-3 off the\n"
                 "                Python runtime's (default f32, no flash attention: as Python's to ~1e-4)\n";
    return 2;
}

int main(int argc, char ** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    int threads = 1;
    bool verify = true, f16_cache = false;
    std::vector<std::string> pos;
    for (size_t i = 0; i < args.size(); i++) {
        if (args[i] == "--threads" && i + 1 < args.size()) threads = std::atoi(args[++i].c_str());
        else if (args[i] == "--no-verify") verify = false;
        else if (args[i] == "--kv-cache" && i + 1 < args.size()) {
            const std::string t = args[++i];
            if (t != "f16" && t != "f32") { std::cerr << "nanoforge-run: --kv-cache f16 or f32\n"; return usage(); }
            f16_cache = t == "f16";
        }
        else if (args[i] == "-h" || args[i] == "--help") return usage(), 0;
        else if (args[i].rfind("--", 0) == 0) { std::cerr << "nanoforge-run: unknown option " << args[i] << "\n"; return usage(); }
        else pos.push_back(args[i]);
    }
    try {
        if (!pos.empty() && pos[0] == "quantize") {
            if (pos.size() != 4) return usage();
            nanoforge::quantize(pos[1], pos[2], pos[3], threads);
            return 0;
        }
        if (!pos.empty() && pos[0] == "info") {
            if (pos.size() != 2) return usage();
            std::cout << nanoforge::Nano(pos[1], threads, verify).manifest().dump(2) << "\n";
            return 0;
        }
        if (pos.size() == 2 && pos[0] == "tokenize") {  // one line of text in, its token ids out
            nanoforge::Nano nano(pos[1], threads, verify);
            for (std::string line; std::getline(std::cin, line);) std::cout << json(nano.tokenize(line)).dump() << "\n";
            return 0;
        }
        if (pos.size() == 2 && pos[0] == "offsets") {  // a line of text (JSON-quoted) in, [ids, spans] out
            nanoforge::Nano nano(pos[1], threads, verify);
            for (std::string line; std::getline(std::cin, line);) {
                const auto doc = nano.document(json::parse(line).get<std::string>());
                std::cout << json::array({doc.ids, doc.offsets}).dump() << "\n";
            }
            return 0;
        }
        if (pos.size() == 2 && pos[0] == "constrain") {  // constrain.cpp against nanoforge.runtime.constrain
            nanoforge::Nano nano(pos[1], threads, verify);
            if (!nano.constraint()) throw nanoforge::Error(pos[1] + ": not a schema decoder");
            for (std::string line; std::getline(std::cin, line);) {
                const std::u32string text = nanoforge::utf8_to_u32(json::parse(line).get<std::string>());
                const std::vector<char> ok = nano.constraint()->allowed(text);
                std::vector<int> ids;
                for (size_t i = 0; i < ok.size(); i++) if (ok[i]) ids.push_back(i);
                const std::string done = nanoforge::u32_to_utf8(nanoforge::complete(nano.constraint()->schema, text));
                std::cout << json{{"allowed", ids}, {"complete", done}}.dump() << "\n";
            }
            return 0;
        }
        if (pos.size() == 1 && pos[0] == "normalise") {  // values.cpp against nanoforge.extract.values
            for (std::string line; std::getline(std::cin, line);) {
                const json r = json::parse(line);
                nanoforge::Field f{"x", r.at("type"), r.value("enum", std::vector<std::string>{}), false, false};
                std::cout << nanoforge::normalise_value(f, r.at("text").get<std::string>()).dump() << "\n";
            }
            return 0;
        }
        if (pos.size() != 1) return usage();
        nanoforge::Nano nano(pos[0], threads, verify, f16_cache);
        std::string line;
        for (long n = 1; std::getline(std::cin, line); n++) {
            json answer;
            try {
                json request = json::parse(line, nullptr, false);
                if (request.is_discarded()) throw nanoforge::Error("not JSON (or not UTF-8)");
                if (request.is_string()) request = json{{"input", request}};
                if (!request.is_object() || !request.contains("input") || !request["input"].is_string())
                    throw nanoforge::Error("expected a JSON string or an object with a string `input`");
                answer = nano.predict(request["input"].get<std::string>(), nanoforge::Options::from_json(request));
            } catch (const nanoforge::Error & e) {
                answer = {{"error", "stdin line " + std::to_string(n) + ": " + e.what()}};
            }
            std::cout << answer.dump(-1, ' ', false, json::error_handler_t::replace) << "\n" << std::flush;
        }
        return 0;
    } catch (const nanoforge::Error & e) {
        std::cerr << "nanoforge-run: " << e.what() << "\n";
        return 2;
    } catch (const std::exception & e) {
        std::cerr << "nanoforge-run: " << e.what() << "\n";
        return 1;
    }
}
