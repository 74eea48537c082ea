"""Drives Pagestream's MCP server with the official Python MCP SDK, over stdio (`pagestream mcp`)
and over streamable HTTP (the api's /mcp), and checks what every tool and resource answers.

Run by services/cli/tests/cli/mcp.rs against a test stack; it passes what to expect in MCP_EXPECT
(JSON) and where the server is in PAGESTREAM_BIN, PAGESTREAM_API_URL and PAGESTREAM_API_KEY.
Exits non-zero at the first failed check, saying which.
"""

import asyncio
import json
import os
import re
import sys

import httpx2
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

EXPECT = json.loads(os.environ["MCP_EXPECT"])
API_URL = os.environ["PAGESTREAM_API_URL"]
API_KEY = os.environ["PAGESTREAM_API_KEY"]
BIN = os.environ["PAGESTREAM_BIN"]
SOURCE = EXPECT["source"]
TOOLS = {"search", "search_code", "get_page", "page_tree", "related", "sources"}

checks = 0


def check(condition, what, detail=""):
    global checks
    checks += 1
    if not condition:
        raise AssertionError(f"{what}\n--- answer ---\n{detail}")


def text_of(result):
    return "\n".join(block.text for block in result.content if block.type == "text")


async def call(session, tool, arguments, expect_error=False):
    result = await session.call_tool(tool, arguments)
    text = text_of(result)
    check(
        bool(result.is_error) == expect_error,
        f"{tool}({arguments}): isError is {result.is_error}, expected {expect_error}",
        text,
    )
    return text


def hits(text):
    """Each result of a search answer: its block of text, split at the `## n.` headings."""
    return re.split(r"\n## \d+\. ", text)[1:]


def page_of(hit):
    found = re.search(r"`(\d+)` in source", hit)
    return found.group(1) if found else None


async def exercise(session, transport):
    info = await session.initialize()
    check(info.server_info.name == "pagestream", f"{transport}: server name", info)
    check(info.capabilities.tools is not None, f"{transport}: tools capability", info)
    check(info.capabilities.resources is not None, f"{transport}: resources capability", info)

    tools = (await session.list_tools()).tools
    check({tool.name for tool in tools} == TOOLS, f"{transport}: the tools", [t.name for t in tools])
    for tool in tools:
        check(len(tool.description or "") > 80, f"{transport}: {tool.name} is described", tool)
        check(tool.input_schema.get("type") == "object", f"{transport}: {tool.name} schema", tool)
    search_schema = next(t for t in tools if t.name == "search").input_schema["properties"]
    for name in ["query", "source", "space", "label", "path", "jira", "mention", "updated_after"]:
        check(name in search_schema, f"{transport}: search takes {name}", search_schema)

    # Resources: a listing, the template, and a page read through its uri.
    resources = (await session.list_resources()).resources
    uris = {str(resource.uri) for resource in resources}
    jira_uri = f"confluence://{SOURCE}/{EXPECT['jira_page']}"
    check(jira_uri in uris, f"{transport}: page resources are listed", sorted(uris))
    check(len(resources) == EXPECT["live_pages"], f"{transport}: every live page is a resource", len(resources))
    removed_uri = f"confluence://{SOURCE}/{EXPECT['removed_page']}"
    check(removed_uri not in uris, f"{transport}: the removed page is not listed", sorted(uris))
    templates = (await session.list_resource_templates()).resource_templates
    check(
        [t.uri_template for t in templates] == ["confluence://{source}/{page_id}"],
        f"{transport}: the resource template",
        templates,
    )
    read = await session.read_resource(jira_uri)
    check(EXPECT["jira"] in read.contents[0].text, f"{transport}: the resource is the page", read)
    try:
        await session.read_resource(removed_uri)
        check(False, f"{transport}: reading the removed page fails")
    except MCPError as error:
        check("deleted" in str(error) or "no page" in str(error), f"{transport}: removed resource", error)

    # search: a Jira key finds its page first; the filters narrow.
    text = await call(session, "search", {"query": EXPECT["jira"], "limit": 5})
    found = hits(text)
    # Two pages hold the key: either may rank first (BM25 favours the shorter one).
    check(found and page_of(found[0]) in (EXPECT["jira_page"], EXPECT["jira_twin"]),
          f"{transport}: Jira key search", text)
    first = found[0]
    for part in ["- section: ", "- score: ", "last modified", "- freshness: last full sync completed", "/pages/"]:
        check(part in first, f"{transport}: a hit shows {part!r}", first)
    check("~~~~markdown" in first, f"{transport}: section text is quoted as data", first)
    text = await call(session, "search", {"query": "deploy release", "jira": EXPECT["jira"], "source": SOURCE})
    check(
        hits(text) and {page_of(hit) for hit in hits(text)} <= {EXPECT["jira_page"], EXPECT["jira_twin"]},
        f"{transport}: the jira filter keeps only the key's pages",
        text,
    )
    text = await call(session, "search", {"query": EXPECT["removed_phrase"]})
    check(
        all(page_of(hit) != EXPECT["removed_page"] for hit in hits(text)),
        f"{transport}: a removed page is not found",
        text,
    )

    # search_code: one language only, with titles.
    for language in ["python", "bash"]:
        text = await call(session, "search_code", {"query": "deploy", "language": language, "limit": 10})
        languages = re.findall(r"- language: (\S+)", text)
        check(languages and set(languages) == {language}, f"{transport}: code search in {language}", text)
    text = await call(session, "search_code", {"query": "deploy", "language": "python"})
    check(EXPECT["code_title"] in text, f"{transport}: a code block's title", text)
    check("import deploy" in text, f"{transport}: the code itself", text)

    # get_page: a long page is an outline; one section is that section only; a window continues.
    long_page = EXPECT["long_page"]
    text = await call(session, "get_page", {"page_id": long_page})
    check("The page is long" in text and "Outline" in text, f"{transport}: long page outline", text)
    check(len(text) < 8000, f"{transport}: the outline is short ({len(text)} chars)", text)
    number = re.search(r"(\d+)\. " + re.escape(EXPECT["long_section"]) + r" \(", text)
    check(number, f"{transport}: the outline lists the section", text)
    text = await call(session, "get_page", {"page_id": long_page, "sections": [number.group(1)]})
    check(EXPECT["long_section_phrase"] in text, f"{transport}: the section's text", text)
    check(EXPECT["other_section_phrase"] not in text, f"{transport}: only that section", text)
    text = await call(session, "get_page", {"page_id": long_page, "sections": [EXPECT["long_section"]], "max_chars": 300})
    offset = re.search(r"`offset` = (\d+)", text)
    check(offset, f"{transport}: a capped section says where to continue", text)
    more = await call(
        session,
        "get_page",
        {"page_id": long_page, "sections": [EXPECT["long_section"]], "max_chars": 300, "offset": int(offset.group(1))},
    )
    check(EXPECT["long_section_phrase"] in text + more, f"{transport}: the continuation goes on", more)
    text = await call(session, "get_page", {"title": EXPECT["jira_title"].upper(), "space": EXPECT["space"]})
    check(f"page `{EXPECT['jira_page']}`" in text and "import deploy" in text, f"{transport}: page by title", text)
    check("Jira: " + EXPECT["jira"] in text, f"{transport}: the page's metadata", text)

    # page_tree: ancestors and children; the top level.
    text = await call(session, "page_tree", {"page_id": EXPECT["child_page"]})
    check(EXPECT["long_title"] in text.split("## Children")[0], f"{transport}: a child's ancestors", text)
    text = await call(session, "page_tree", {"page_id": long_page, "source": SOURCE})
    check(f"page `{EXPECT['child_page']}`" in text.split("## Children")[1], f"{transport}: children", text)
    text = await call(session, "page_tree", {})
    check(f"page `{long_page}`" in text, f"{transport}: the top level", text)

    # related: links both ways, the same Jira key.
    text = await call(session, "related", {"page_id": EXPECT["jira_page"]})
    links_to = text.split("## Links to")[1].split("## Linked from")[0]
    check(f"page `{long_page}`" in links_to, f"{transport}: links out", text)
    same_jira = text.split("## Same Jira issue")[1].split("## Mentions")[0]
    check(f"page `{EXPECT['jira_twin']}`" in same_jira, f"{transport}: the same Jira key", text)
    text = await call(session, "related", {"page_id": long_page})
    linked_from = text.split("## Linked from")[1].split("## Same Jira")[0]
    check(f"page `{EXPECT['jira_page']}`" in linked_from, f"{transport}: links in", text)

    text = await call(session, "sources", {})
    check(f"`{SOURCE}`" in text and f"{EXPECT['live_pages']} pages" in text, f"{transport}: sources", text)
    check("last full sync completed" in text, f"{transport}: a source's freshness", text)

    # Errors are results that say what to do.
    text = await call(session, "get_page", {"page_id": EXPECT["removed_page"]}, expect_error=True)
    check("deleted" in text, f"{transport}: a removed page is gone", text)
    text = await call(session, "search", {"query": "deploy", "source": "nosuchsource"}, expect_error=True)
    check("`sources`" in text, f"{transport}: unknown source", text)
    text = await call(session, "get_page", {"title": "No page is called this"}, expect_error=True)
    check("no page titled" in text, f"{transport}: no page with that title", text)
    text = await call(session, "get_page", {}, expect_error=True)
    check("page_id" in text, f"{transport}: a page must be named", text)
    text = await call(session, "search", {"query": "deploy", "jira": "not a key"}, expect_error=True)
    check("invalid `jira`" in text, f"{transport}: an invalid filter", text)
    text = await call(session, "search", {"query": 42}, expect_error=True)
    check("invalid type" in text, f"{transport}: arguments of the wrong type", text)


def stdio_parameters(key):
    return StdioServerParameters(
        command=BIN,
        args=["mcp"],
        env={"PAGESTREAM_API_URL": API_URL, "PAGESTREAM_API_KEY": key, "RUST_LOG": "warn"},
    )


async def over_stdio():
    async with stdio_client(stdio_parameters(API_KEY)) as (read, write):
        async with ClientSession(read, write) as session:
            await exercise(session, "stdio")
    # A wrong key: the server starts, and every tool says the key was refused.
    async with stdio_client(stdio_parameters("not-the-key")) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            text = await call(session, "sources", {}, expect_error=True)
            check("refused the key" in text and "PAGESTREAM_API_KEY" in text, "stdio: a refused key", text)


async def over_http():
    url = f"{API_URL}/mcp"
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await exercise(session, "http")
    # Without the key, /mcp refuses like every /api route.
    async with httpx2.AsyncClient(timeout=10) as http:
        response = await http.post(
            url,
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"Authorization": "Bearer not-the-key", "Accept": "application/json, text/event-stream"},
        )
        check(response.status_code == 401, "http: a wrong key is refused", response.text)
        check(response.json()["error"]["code"] == "invalid_api_key", "http: the api's error", response.text)


async def main():
    await over_stdio()
    await over_http()
    print(f"mcp client checks: {checks} passed over stdio and streamable HTTP")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except AssertionError as failure:
        print(f"mcp client check failed: {failure}", file=sys.stderr)
        sys.exit(1)
