// A GraphQL document as its text, carrying the types of its result and variables (generated into
// operations.ts by schema/codegen.ts). Clients send the text; TypeScript checks what goes in and out.
export type TypedDocument<Result, Variables> = string & { readonly __operation?: (variables: Variables) => Result };
