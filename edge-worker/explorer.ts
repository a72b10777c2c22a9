// The API explorer: GraphiQL (its UMD build and React's, globals) on this server's /graphql over
// HTTP and graphql-ws. The token comes from ?token= or the dashboard's (kept in this browser) and
// goes in the Authorization header; without one, only what anonymous callers may see answers.
declare const React: { createElement(type: unknown, props: Record<string, unknown>): unknown };
declare const ReactDOM: { createRoot(el: Element): { render(node: unknown): void } };
declare const GraphiQL: ((props: Record<string, unknown>) => unknown) & { createFetcher(options: Record<string, unknown>): unknown };

const EXAMPLE = `# Ctrl-Enter runs it; the book icon (top left) browses the schema
{
  runs(first: 5) { total items { id status strategyName progress accuracy model { name } dataset { name } } }
  models { items { name parameters } }
  datasets { items { name trainImages testImages classes } }
}
`;

const params = new URLSearchParams(location.search);
const token = params.get('token') ?? localStorage.getItem('partune.token') ?? '';
if (params.has('token')) {
  localStorage.setItem('partune.token', token);
  history.replaceState(null, '', location.pathname); // out of the address bar and the history
}
const url = `${location.origin}/graphql`;
const authorization = token ? `Bearer ${token}` : undefined;
const fetcher = GraphiQL.createFetcher({
  url, subscriptionUrl: url.replace(/^http/, 'ws'), wsConnectionParams: authorization ? { authorization } : {},
});
ReactDOM.createRoot(document.getElementById('explorer')!).render(React.createElement(GraphiQL, {
  fetcher, defaultQuery: EXAMPLE, headers: authorization ? JSON.stringify({ Authorization: authorization }, null, 2) : undefined, shouldPersistHeaders: false,
}));
